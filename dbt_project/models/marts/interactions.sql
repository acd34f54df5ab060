{#- One row per exposure of the day (a user shown an item in a session and scene), with the
    click / cart / purchase labels of that exposure. Replaces the day (the first build loads every
    day up to it).

    Days with impressions (the simulator, logs with impressions): an exposure is an impression, and
    click = 1 when the item was clicked in that session.
    View-only days (REES46, Taobao, RetailRocket): a view is the exposure and counts as the positive
    of the click task ("view" task), and each view brings `negatives_per_view` sampled items the user
    did not touch that day, with all labels 0. The sample is seeded (TANDEM_SEED) by the exposure, so
    a rerun draws the same items. -#}
{{ config(materialized='incremental', incremental_strategy='append', pre_hook="{{ delete_run_date() }}") }}

with events as (
    select * from {{ ref('stg_events') }}
    where {{ days_to_build() }}
),

day_kind as (
    select ds, bool_or(event_type = 'impression') as has_impressions
    from events
    group by ds
),

grouped as (
    select
        ds,
        session_id,
        user_id,
        item_id,
        coalesce(scene, 'unknown') as scene,
        count(*) filter (where event_type = 'impression') as impressions,
        count(*) filter (where event_type = 'view') as views,
        min(event_time) filter (where event_type in ('impression', 'view')) as exposed_at,
        min(position) as position,
        min(query) as query,
        max(price) as event_price,
        min(category_id) as event_category_id,
        max(case when event_type = 'click' then 1 else 0 end)::tinyint as clicked,
        max(case when event_type = 'cart' then 1 else 0 end)::tinyint as cart,
        max(case when event_type = 'purchase' then 1 else 0 end)::tinyint as purchase
    from events
    group by all
),

positives as (
    select
        g.*,
        case when k.has_impressions then g.clicked else 1 end::tinyint as click,
        k.has_impressions
    from grouped as g
    inner join day_kind as k using (ds)
    where (k.has_impressions and g.impressions > 0) or (not k.has_impressions and g.views > 0)
),

day_items as (
    select
        ds, item_id, category_id, price,
        row_number() over (partition by ds order by item_id) - 1 as item_index,
        count(*) over (partition by ds) as n_items
    from {{ ref('stg_items') }}
    where {{ days_to_build() }}
),

drawn as (
    -- view-only days: `negatives_per_view` items per view, drawn by a seeded hash of the exposure
    select
        p.ds, p.session_id, p.user_id, p.scene, p.exposed_at,
        md5_number_lower(concat_ws('|', '{{ int_setting("seed") }}', p.session_id, p.user_id,
                                   p.item_id, p.scene, draw)) as h
    from positives as p
    cross join range({{ int_setting('negatives_per_view') }}) as t(draw)
    where not p.has_impressions
),

negatives as (
    select
        d.ds, d.session_id, d.user_id, i.item_id, d.scene,
        0 as impressions, 0 as views, d.exposed_at, null::integer as position, null::varchar as query,
        i.price as event_price, i.category_id as event_category_id,
        0::tinyint as clicked, 0::tinyint as cart, 0::tinyint as purchase, 0::tinyint as click,
        false as has_impressions
    from drawn as d
    inner join (select ds, any_value(n_items) as n_items from day_items group by ds) as n using (ds)
    inner join day_items as i on i.ds = d.ds and i.item_index = d.h % n.n_items
    anti join grouped as g on g.ds = d.ds and g.user_id = d.user_id and g.item_id = i.item_id
    qualify row_number() over (partition by d.ds, d.session_id, d.user_id, i.item_id, d.scene) = 1
),

exposures as (
    select * from positives
    union all by name
    select * from negatives
)

select
    md5(concat_ws('|', e.session_id, e.user_id, e.item_id, e.scene)) as exposure_id,
    e.ds,
    e.exposed_at,
    e.session_id,
    e.user_id,
    e.item_id,
    coalesce(i.category_id, e.event_category_id) as category_id,
    e.scene,
    e.query,
    e.position,
    coalesce(i.price, e.event_price) as price,
    e.click,
    e.cart,
    e.purchase
from exposures as e
left join {{ ref('items') }} as i
    on i.ds = e.ds and i.item_id = e.item_id
