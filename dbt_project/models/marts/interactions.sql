{#- One row per exposure of the run date (a user shown an item in a session and scene), with the
    click / cart / purchase labels of that exposure. Replaces the day (the first build loads every day up to it). -#}
{{ config(materialized='incremental', incremental_strategy='append', pre_hook="{{ delete_run_date() }}") }}

with events as (
    select * from {{ ref('stg_events') }}
    where {{ days_to_build() }}
),

exposures as (
    select
        ds,
        session_id,
        user_id,
        item_id,
        coalesce(scene, 'unknown') as scene,
        min(event_time) filter (where event_type = 'impression') as exposed_at,
        min(position) as position,
        min(query) as query,
        max(price) as event_price,
        min(category_id) as event_category_id,
        max(case when event_type = 'click' then 1 else 0 end)::tinyint as click,
        max(case when event_type = 'cart' then 1 else 0 end)::tinyint as cart,
        max(case when event_type = 'purchase' then 1 else 0 end)::tinyint as purchase
    from events
    group by all
    having count(*) filter (where event_type = 'impression') > 0
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
