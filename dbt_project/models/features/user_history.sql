{#- Each user's last `history_length` behaviour events (click / view / cart / fav / purchase) as of the
    end of day `ds`, newest first: the sequence the joint model's DIN encoder attends over. Point in
    time: only events of days <= ds, within the 30 days ending at ds. One row per user with such an
    event; lists aligned by position (item, category, event type, whole days before ds). Empty when
    history_length is 0 (the sequence encoder is off). -#}
{{ config(materialized='incremental', incremental_strategy='append', pre_hook="{{ delete_run_date() }}") }}
{%- set n = int_setting('history_length') %}

with days as (
    select distinct ds as as_of from {{ ref('stg_events') }} where {{ days_to_build() }} and {{ n }} > 0
),

recent as (
    select
        d.as_of as ds, e.user_id, e.item_id, e.category_id, e.event_type, e.event_time, e.event_id,
        d.as_of - e.ds as days_ago
    from days as d
    inner join {{ ref('stg_events') }} as e
        on e.ds <= d.as_of and e.ds > d.as_of - interval 30 day
    where e.event_type in ('click', 'view', 'cart', 'fav', 'purchase')
    qualify row_number() over (
        partition by d.as_of, e.user_id order by e.event_time desc, e.event_id desc
    ) <= {{ n }}
)

select
    ds,
    user_id,
    list(item_id order by event_time desc, event_id desc) as hist_item_ids,
    list(category_id order by event_time desc, event_id desc) as hist_category_ids,
    list(event_type order by event_time desc, event_id desc) as hist_event_types,
    list(days_ago::integer order by event_time desc, event_id desc) as hist_days_ago
from recent
group by ds, user_id
