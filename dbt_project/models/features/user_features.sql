{#- User features as of the end of day `ds` (point in time: only events of days <= ds, over the
    1 / 7 / 30 days ending at ds). One row per user active in those 30 days. -#}
{{ config(materialized='incremental', incremental_strategy='append', pre_hook="{{ delete_run_date() }}") }}

with days as ({{ feature_days(ref('user_day_stats')) }}),

windowed as (
    select
        d.as_of as ds,
        s.user_id,
        {%- for n in [1, 7, 30] %}
        {%- for m in ['impressions', 'views', 'clicks', 'carts', 'purchases'] %}
        {{ window_sum(m, n) }} as {{ m }}_{{ n }}d,
        {%- endfor %}
        {%- endfor %}
        {{ window_sum('home_impressions', 30) }} as home_impressions_30d,
        {{ window_sum('home_clicks', 30) }} as home_clicks_30d,
        {{ window_sum('search_impressions', 30) }} as search_impressions_30d,
        {{ window_sum('search_clicks', 30) }} as search_clicks_30d,
        {{ window_sum('clicked_price_sum', 30) }} as clicked_price_sum_30d,
        {{ window_sum('spend', 30) }} as spend_30d,
        d.as_of - max(s.ds) as days_since_last_active
    from days as d
    inner join {{ ref('user_day_stats') }} as s
        on s.ds <= d.as_of and s.ds > d.as_of - interval 30 day
    group by d.as_of, s.user_id
)

select
    ds,
    user_id,
    {%- for n in [1, 7, 30] %}
    {%- for m in ['impressions', 'views', 'clicks', 'carts', 'purchases'] %}
    {{ m }}_{{ n }}d::double as f_u_{{ m }}_{{ n }}d,
    {%- endfor %}
    {%- endfor %}
    {{ smoothed_rate('clicks_30d', 'impressions_30d', 0.1) }} as f_u_ctr_30d,
    {{ smoothed_rate('home_clicks_30d', 'home_impressions_30d', 0.1) }} as f_u_home_ctr_30d,
    {{ smoothed_rate('search_clicks_30d', 'search_impressions_30d', 0.1) }} as f_u_search_ctr_30d,
    {{ smoothed_rate('purchases_30d', 'clicks_30d', 0.05) }} as f_u_cvr_30d,
    (clicked_price_sum_30d / nullif(clicks_30d, 0))::double as f_u_avg_clicked_price_30d,
    spend_30d::double as f_u_spend_30d,
    days_since_last_active::double as f_u_days_since_last_active
from windowed
