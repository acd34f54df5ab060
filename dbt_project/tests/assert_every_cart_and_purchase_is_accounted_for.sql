{#- For the run date, per event type (cart, fav, purchase): the staged (session, user, item, scene)
    keys and events = the sum over label_reconciliation's outcomes; its labelled keys = the labels in
    interactions (sum of the label column, an independent count); and on a view-only day nothing is
    dropped (every cart, fav and purchase is a label, on its view or on an implied one). A row here
    is a day and type that does not add up. -#}
with staged as (
    select
        event_type,
        count(distinct (session_id, user_id, item_id, coalesce(scene, 'unknown'))) as keys,
        count(*) as events
    from {{ ref('stg_events') }}
    where ds = {{ run_date() }} and event_type in ('cart', 'fav', 'purchase')
    group by event_type
),

day_kind as (
    select coalesce(bool_or(event_type = 'impression'), false) as has_impressions
    from {{ ref('stg_events') }}
    where ds = {{ run_date() }}
),

labels as (
    select t.event_type, t.n
    from (
        select sum(cart) as cart, sum(fav) as fav, sum(purchase) as purchase
        from {{ ref('interactions') }}
        where ds = {{ run_date() }}
    ) unpivot (n for event_type in (cart, fav, purchase)) as t
),

reconciled as (
    select
        event_type,
        sum(keys) as keys,
        sum(events) as events,
        coalesce(sum(keys) filter (where outcome = 'labelled'), 0) as labelled,
        coalesce(sum(keys) filter (where outcome = 'dropped'), 0) as dropped
    from {{ ref('label_reconciliation') }}
    where ds = {{ run_date() }}
    group by event_type
)

select
    coalesce(s.event_type, r.event_type) as event_type,
    s.keys as staged_keys, s.events as staged_events,
    r.keys as reconciled_keys, r.events as reconciled_events,
    r.labelled, coalesce(l.n, 0) as labels_in_interactions, r.dropped
from staged as s
full join reconciled as r using (event_type)
left join labels as l on l.event_type = coalesce(s.event_type, r.event_type)
cross join day_kind as k
where s.keys is distinct from r.keys
   or s.events is distinct from r.events
   or r.labelled is distinct from coalesce(l.n, 0)
   or (not k.has_impressions and r.dropped > 0)
