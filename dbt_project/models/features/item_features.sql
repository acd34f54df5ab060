{#- Item features as of the end of day `ds`: popularity and smoothed CTR / CVR over 7 and 30 days,
    price, category, and age (days since the item was first exposed). One row per item in the day's
    snapshot. Only days <= ds are read. -#}
{{ config(materialized='incremental', incremental_strategy='append', pre_hook="{{ delete_run_date() }}") }}

with days as (
    select distinct ds as as_of from {{ ref('items') }} where {{ days_to_build() }}
),

windowed as (
    select
        d.as_of as ds,
        s.item_id,
        {%- for n in [7, 30] %}
        {%- for m in ['exposures', 'clicks', 'carts', 'purchases'] %}
        {{ window_sum(m, n) }} as {{ m }}_{{ n }}d,
        {%- endfor %}
        {%- endfor %}
        count(*) as active_days
    from days as d
    inner join {{ ref('item_day_stats') }} as s
        on s.ds <= d.as_of and s.ds > d.as_of - interval 30 day
    group by d.as_of, s.item_id
),

first_seen as (
    select item_id, min(ds) as first_exposed
    from {{ ref('item_day_stats') }}
    group by item_id
)

select
    i.ds,
    i.item_id,
    i.category_id,
    i.price as f_i_price,
    coalesce(w.exposures_7d, 0)::double as f_i_exposures_7d,
    coalesce(w.exposures_30d, 0)::double as f_i_exposures_30d,
    coalesce(w.purchases_30d, 0)::double as f_i_purchases_30d,
    {{ smoothed_rate('coalesce(w.clicks_7d, 0)', 'coalesce(w.exposures_7d, 0)', 0.1) }} as f_i_ctr_7d,
    {{ smoothed_rate('coalesce(w.clicks_30d, 0)', 'coalesce(w.exposures_30d, 0)', 0.1) }} as f_i_ctr_30d,
    {{ smoothed_rate('coalesce(w.carts_30d, 0)', 'coalesce(w.clicks_30d, 0)', 0.2) }} as f_i_cart_rate_30d,
    {{ smoothed_rate('coalesce(w.purchases_30d, 0)', 'coalesce(w.clicks_30d, 0)', 0.05) }} as f_i_cvr_30d,
    (i.ds - f.first_exposed)::double as f_i_age_days
from {{ ref('items') }} as i
left join windowed as w on w.ds = i.ds and w.item_id = i.item_id
left join first_seen as f on f.item_id = i.item_id and f.first_exposed <= i.ds
where {{ days_to_build('i.ds') }}
