{#- User × category affinity as of the end of day `ds` (30 days ending at ds): the user's exposures
    and clicks in the category, its share of the user's clicks, and a smoothed CTR. -#}
{{ config(materialized='incremental', incremental_strategy='append', pre_hook="{{ delete_run_date() }}") }}

with windowed as (
    {{ windowed_sums(ref('user_category_day_stats'), ['user_id', 'category_id'], ['exposures', 'clicks', 'purchases'], 30) }}
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
