{#- Where every cart, fav and purchase of a day went (docs/data.md, "Labels: every cart and purchase
    accounted for"). One row per (ds, event_type, outcome, reason), counting (session, user, item,
    scene) keys (the grain of an exposure's label) and the staged events behind them:

    - labelled / exposure: the key's exposure (an impression, or a real view) carries the label;
    - labelled / implied_view: view-only days, no view of the item in that session: the implied view
      of interactions carries it;
    - dropped / no_impression_in_session: days with impressions, the item was not shown in that
      session (a cart from a page that logs no impressions): no label;
    - dropped / no_view_in_session: a view-only day whose key found no exposure (never expected: the
      dbt test assert_every_cart_and_purchase_is_accounted_for fails on it).

    Per ds and event type: staged keys = the sum of `keys`, staged events = the sum of `events`.
    Replaces the day (the first build loads every day up to it). -#}
{{ config(materialized='incremental', incremental_strategy='append', pre_hook="{{ delete_run_date() }}") }}

with acts as (
    select
        ds, session_id, user_id, item_id, coalesce(scene, 'unknown') as scene, event_type,
        count(*) as events
    from {{ ref('stg_events') }}
    where {{ days_to_build() }} and event_type in ('cart', 'fav', 'purchase')
    group by all
),

day_kind as (
    select ds, bool_or(event_type = 'impression') as has_impressions
    from {{ ref('stg_events') }}
    where {{ days_to_build() }}
    group by ds
),

exposures as (
    select ds, session_id, user_id, item_id, scene, exposure, cart, fav, purchase
    from {{ ref('interactions') }}
    where {{ days_to_build() }} and exposure <> 'sampled'
),

matched as (
    select
        a.ds,
        a.event_type,
        a.events,
        x.exposure,
        k.has_impressions,
        coalesce(case a.event_type
            when 'cart' then x.cart when 'fav' then x.fav when 'purchase' then x.purchase
        end = 1, false) as labelled
    from acts as a
    inner join day_kind as k using (ds)
    left join exposures as x
        on x.ds = a.ds and x.session_id is not distinct from a.session_id and x.user_id = a.user_id
        and x.item_id = a.item_id and x.scene = a.scene
)

select
    ds,
    event_type,
    case when labelled then 'labelled' else 'dropped' end as outcome,
    case
        when labelled and exposure = 'implied' then 'implied_view'
        when labelled then 'exposure'
        when has_impressions then 'no_impression_in_session'
        else 'no_view_in_session'
    end as reason,
    count(*)::bigint as keys,
    sum(events)::bigint as events
from matched
group by all
order by ds, event_type, outcome, reason
