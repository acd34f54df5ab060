{#- Every landed event row of the days built, typed, with where it landed (`landed_file`,
    `landed_row`), the first landing of its event_id (`first_ds`, `first_file`, `first_row`), what it
    is (`landing`: first | duplicate | conflicting_duplicate) and why it cannot be staged
    (`reject_reason`, null when it can). Incremental by the day it landed: a run deletes and rebuilds
    its day, reading only that day's files; the first build reads every day up to the run date.

    Deduplication over the whole history, first landing wins: of the rows with one event_id, the
    first by (ds, landed_file, landed_row) is the event; a later one with the same content is a
    `duplicate` (counted, not staged), one with other content a `conflicting_duplicate`
    (quarantined; its first landing is named in first_ds / first_file / first_row). A night reads the
    earlier days' first landings from this table, never their files. Rows without an event_id are
    each their own landing (and quarantined as null_event_id). stg_events, stg_events_quarantine
    and stg_events_duplicates split these rows: landed = staged + quarantined + duplicates. -#}
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    pre_hook="{{ delete_run_date() }}",
) }}

with landed as (
    {{ read_landed(landed_files('events'), ['event_id', 'event_time', 'user_id', 'item_id', 'event_type',
        'scene', 'query', 'position', 'session_id', 'price', 'category_id']) }}
),

typed as (
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
        ds,
        {{ business_date('event_time') }} as event_date,
        {{ business_date('event_time') }} < ds as is_late,
        landed_file,
        landed_row,
        {{ event_reject_reason() }} as rule_broken
    from landed
),

hashed as (
    select
        *,
        md5(to_json({
            'event_time': event_time, 'user_id': user_id, 'item_id': item_id, 'event_type': event_type,
            'scene': scene, 'query': query, 'position': position, 'session_id': session_id,
            'price': price, 'category_id': category_id
        })) as content_hash
    from typed
),

earlier as (
    {%- if is_incremental() %}
    select event_id, ds as first_ds, landed_file as first_file, landed_row as first_row, content_hash as first_hash
    from {{ this }}
    where ds < {{ run_date() }} and landing = 'first' and event_id is not null
    {%- else %}
    select
        null::varchar as event_id, null::date as first_ds, null::varchar as first_file,
        null::bigint as first_row, null::varchar as first_hash
    where false
    {%- endif %}
),

ordered as (
    select
        h.*,
        first_value(ds) over w as w_ds,
        first_value(landed_file) over w as w_file,
        first_value(landed_row) over w as w_row,
        first_value(content_hash) over w as w_hash
    from hashed as h
    window w as (partition by event_id order by ds, landed_file, landed_row)
),

classified as (
    select
        o.*,
        case when o.event_id is not null then coalesce(e.first_ds, o.w_ds) end as first_ds,
        case when o.event_id is not null then coalesce(e.first_file, o.w_file) end as first_file,
        case when o.event_id is not null then coalesce(e.first_row, o.w_row) end as first_row,
        case
            when o.event_id is null then 'first'
            when e.event_id is null and o.ds = o.w_ds and o.landed_file = o.w_file and o.landed_row = o.w_row
                then 'first'
            when o.content_hash = coalesce(e.first_hash, o.w_hash) then 'duplicate'
            else 'conflicting_duplicate'
        end as landing
    from ordered as o
    left join earlier as e on e.event_id = o.event_id
)

select
    event_id, event_time, user_id, item_id, event_type, scene, query, position, session_id, price,
    category_id, ds, event_date, is_late, landed_file, landed_row, content_hash,
    first_ds, first_file, first_row, landing,
    case
        when landing = 'conflicting_duplicate' then 'conflicting_duplicate'
        when landing = 'first' then rule_broken
    end as reject_reason
from classified
where {{ days_to_build() }}
