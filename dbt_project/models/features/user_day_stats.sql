{#- Per user and day: counts by event type and scene, and money. The daily grain every user feature
    window sums over. Replaces the day (the first build loads every day up to it). -#}
{{ config(materialized='incremental', incremental_strategy='append', pre_hook="{{ delete_run_date() }}") }}

select
    ds,
    user_id,
    {%- for t in ['impression', 'view', 'click', 'cart', 'fav', 'purchase'] %}
    count(*) filter (where event_type = '{{ t }}')::bigint as {{ t }}s,
    {%- endfor %}
    {%- for s in ['home', 'search'] %}
    count(*) filter (where event_type = 'impression' and scene = '{{ s }}')::bigint as {{ s }}_impressions,
    count(*) filter (where event_type = 'click' and scene = '{{ s }}')::bigint as {{ s }}_clicks,
    {%- endfor %}
    -- money summed as DECIMAL: exact, so the result does not depend on DuckDB's parallel sum order
    coalesce(sum(price::decimal(18, 2)) filter (where event_type = 'click'), 0) as clicked_price_sum,
    coalesce(sum(price::decimal(18, 2)) filter (where event_type = 'purchase'), 0) as spend,
    max(event_time) as last_event_time
from {{ ref('stg_events') }}
where {{ days_to_build() }}
group by ds, user_id
