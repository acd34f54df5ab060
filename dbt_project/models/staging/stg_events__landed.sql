{#- Landed events, typed, each with the reason it cannot be staged (or null). Ephemeral: inlined
    into stg_events and stg_events_quarantine, which choose the days (pushed down to the Parquet scan). -#}
{{ config(materialized='ephemeral') }}

with landed as (
    select * from {{ source('landing', 'events') }}
)

select
    cast(event_id as varchar) as event_id,
    -- normalised to UTC, stored without a zone
    timezone('UTC', cast(event_time as timestamptz)) as event_time,
    cast(user_id as varchar) as user_id,
    cast(item_id as varchar) as item_id,
    lower(cast(event_type as varchar)) as event_type,
    cast(scene as varchar) as scene,
    cast(query as varchar) as query,
    cast(position as integer) as position,
    cast(session_id as varchar) as session_id,
    cast(price as double) as price,
    cast(category_id as varchar) as category_id,
    cast(ds as date) as ds,
    {{ business_date('event_time') }} as event_date,
    {{ business_date('event_time') }} < cast(ds as date) as is_late,
    {{ event_reject_reason() }} as reject_reason
from landed
