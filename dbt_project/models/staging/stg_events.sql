{#- Valid events of each day built, one row per event_id (first by event time). Replaces the day (the first build loads every day up to it). -#}
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    pre_hook="{{ delete_run_date() }}",
) }}

select
    event_id, event_time, user_id, item_id, event_type, scene, query, position, session_id,
    price, category_id, ds
from {{ ref('stg_events__landed') }}
where reject_reason is null and {{ days_to_build() }}
qualify row_number() over (partition by ds, event_id order by event_time, user_id, item_id, event_type) = 1
