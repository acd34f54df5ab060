{#- One row per exposure of the day (a user shown an item in a session and scene), with the
    click / cart / purchase / fav labels of that exposure and `exposure`, what the row is. Replaces
    the day (the first build loads every day up to it).

    Days with impressions (the simulator, logs with impressions): an exposure is an impression
    (exposure = 'impression'), and click = 1 when the item was clicked in that session. A cart, fav or
    purchase of an item not shown in that session is no label (label_reconciliation counts it,
    reason no_impression_in_session).
    View-only days (REES46, Taobao, RetailRocket, Tianchi): a view is the exposure (exposure = 'view')
    and counts as the positive of the click task ("view" task). A cart, fav or purchase of an item the
    user did not view in that session implies that the user saw it: it gets an implied view
    (exposure = 'implied', click = 1) carrying its labels, so every cart and purchase is a label. Each
    view (real or implied) brings `negatives_per_view` sampled items the user did not touch that day
    (exposure = 'sampled', all labels 0), drawn by `negative_sampling`: 'uniform' over the day's
    items, 'popularity' in proportion to 1 + the distinct users who acted on the item (any event but
    an impression) on the `popularity_days` days BEFORE the day (never the day itself: no leakage), or
    'popularity_category' the same within the viewed item's category (the whole day's items when the
    category has fewer than two). The draw is seeded (TANDEM_SEED) by the exposure, so a rerun draws
    the same items; uniform draws the same items as before the setting existed. -#}
{{ config(materialized='incremental', incremental_strategy='append', pre_hook="{{ delete_run_date() }}") }}
{%- set sampling = setting('negative_sampling') %}
{%- if execute and sampling not in ('uniform', 'popularity', 'popularity_category') %}
  {{ exceptions.raise_compiler_error("negative_sampling must be uniform, popularity or popularity_category, not " ~ sampling) }}
{%- endif %}

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
        -- an implied view (no view in the group) is exposed at its first event
        coalesce(min(event_time) filter (where event_type in ('impression', 'view')), min(event_time)) as exposed_at,
        min(position) as position,
        min(query) as query,
        max(price) as event_price,
        min(category_id) as event_category_id,
        max(case when event_type = 'click' then 1 else 0 end)::tinyint as clicked,
        max(case when event_type = 'cart' then 1 else 0 end)::tinyint as cart,
        max(case when event_type = 'purchase' then 1 else 0 end)::tinyint as purchase,
        max(case when event_type = 'fav' then 1 else 0 end)::tinyint as fav
    from events
    group by all
),

positives as (
    select
        g.*,
        case when k.has_impressions then g.clicked else 1 end::tinyint as click,
        case
            when k.has_impressions then 'impression'
            when g.views > 0 then 'view'
            else 'implied'
        end as exposure,
        k.has_impressions
    from grouped as g
    inner join day_kind as k using (ds)
    where (k.has_impressions and g.impressions > 0)
       or (not k.has_impressions and (g.views > 0 or g.cart = 1 or g.purchase = 1 or g.fav = 1))
),

day_items as (
    select ds, item_id, category_id, price
    from {{ ref('stg_items') }}
    where {{ days_to_build() }}
),

{%- if sampling == 'uniform' %}

weighted as (
    select *, 1::bigint as weight from day_items
),
{%- else %}

popularity as (
    -- per day built and item: distinct users acting on the item on each of the popularity_days days
    -- BEFORE the day, summed (the day's own events never count: point in time)
    select b.ds, s.item_id, sum(s.users)::bigint as users
    from (select distinct ds from events) as b
    inner join (
        select ds, item_id, count(distinct user_id) as users
        from {{ ref('stg_events') }}
        where event_type <> 'impression' and ds < {{ run_date() }}
          and ds >= (select min(ds) from events) - interval ({{ int_setting('popularity_days') }}) day
        group by ds, item_id
    ) as s
        on s.ds < b.ds and s.ds >= b.ds - interval ({{ int_setting('popularity_days') }}) day
    group by b.ds, s.item_id
),

weighted as (
    select i.*, (1 + coalesce(p.users, 0))::bigint as weight
    from day_items as i
    left join popularity as p using (ds, item_id)
),
{%- endif %}

pools as (
    -- the items a negative can be drawn from: '*' every item of the day; 'c:<category>' its category
    select ds, '*' as pool, item_id, category_id, price, weight from weighted
    {%- if sampling == 'popularity_category' %}
    union all
    select ds, 'c:' || category_id as pool, item_id, category_id, price, weight
    from weighted
    where category_id is not null
    {%- endif %}
),

cumulative as (
    -- item k of a pool owns the integers [lo, lo + weight) of 0 .. total - 1 (items in item_id order:
    -- with weight 1 this is the item's index, the uniform draw of before)
    select
        *,
        (sum(weight) over (partition by ds, pool order by item_id rows unbounded preceding) - weight)::bigint as lo,
        sum(weight) over (partition by ds, pool)::bigint as total,
        count(*) over (partition by ds, pool) as n_items
    from pools
),

pool_totals as (
    select ds, pool, any_value(total) as total, any_value(n_items) as n_items
    from cumulative
    group by ds, pool
),

drawn as (
    -- view-only days: `negatives_per_view` draws per view, by a seeded hash of the exposure
    select
        p.ds, p.session_id, p.user_id, p.scene, p.exposed_at, t.pool,
        (md5_number_lower(concat_ws('|', '{{ int_setting("seed") }}', p.session_id, p.user_id,
                                    p.item_id, p.scene, draw)) % t.total)::bigint as u
    from (
        select
            p.*,
            {%- if sampling == 'popularity_category' %}
            coalesce(c.pool, '*') as pool
            {%- else %}
            '*' as pool
            {%- endif %}
        from positives as p
        {%- if sampling == 'popularity_category' %}
        left join day_items as i on i.ds = p.ds and i.item_id = p.item_id
        left join pool_totals as c
            on c.ds = p.ds and c.pool = 'c:' || coalesce(i.category_id, p.event_category_id) and c.n_items >= 2
        {%- endif %}
        where not p.has_impressions
    ) as p
    inner join pool_totals as t on t.ds = p.ds and t.pool = p.pool
    cross join range({{ int_setting('negatives_per_view') }}) as r(draw)
),

negatives as (
    select
        d.ds, d.session_id, d.user_id, i.item_id, d.scene,
        0 as impressions, 0 as views, d.exposed_at, null::integer as position, null::varchar as query,
        i.price as event_price, i.category_id as event_category_id,
        0::tinyint as clicked, 0::tinyint as cart, 0::tinyint as purchase, 0::tinyint as fav,
        0::tinyint as click, 'sampled' as exposure, false as has_impressions
    from drawn as d
    asof inner join cumulative as i on i.ds = d.ds and i.pool = d.pool and d.u >= i.lo
    anti join grouped as g on g.ds = d.ds and g.user_id = d.user_id and g.item_id = i.item_id
    qualify row_number() over (
        partition by d.ds, d.session_id, d.user_id, i.item_id, d.scene order by d.exposed_at, d.u
    ) = 1
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
    e.exposure,
    e.click,
    e.cart,
    e.purchase,
    e.fav
from exposures as e
left join {{ ref('items') }} as i
    on i.ds = e.ds and i.item_id = e.item_id
