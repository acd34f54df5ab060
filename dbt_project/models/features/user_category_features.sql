{#- User × category affinity as of the end of day `ds` (30 days ending at ds): the user's exposures
    and clicks in the category, its share of the user's clicks, and a smoothed CTR. -#}
{{ config(materialized='incremental', incremental_strategy='append', pre_hook="{{ delete_run_date() }}") }}

with days as ({{ feature_days(ref('user_category_day_stats')) }}),

windowed as (
    select
        d.as_of as ds,
        s.user_id,
        s.category_id,
        {{ window_sum('exposures', 30) }} as exposures_30d,
        {{ window_sum('clicks', 30) }} as clicks_30d,
        {{ window_sum('purchases', 30) }} as purchases_30d
    from days as d
    inner join {{ ref('user_category_day_stats') }} as s
        on s.ds <= d.as_of and s.ds > d.as_of - interval 30 day
    group by d.as_of, s.user_id, s.category_id
)

select
    ds,
    user_id,
    category_id,
    clicks_30d::double as f_uc_clicks_30d,
    clicks_30d / nullif(sum(clicks_30d) over (partition by ds, user_id), 0) as f_uc_click_share_30d,
    {{ smoothed_rate('clicks_30d', 'exposures_30d', 0.1) }} as f_uc_ctr_30d,
    purchases_30d::double as f_uc_purchases_30d
from windowed
