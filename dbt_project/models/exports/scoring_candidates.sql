{#- Candidate (user, item) pairs to score for the run date: every user active on the day, crossed
    with the most clicked items of each scene over the last `popularity_days`, in stock, not bought
    by that user in that window. One row per pair, in the scene where the item ranks best, with the
    features as of the end of the run date. -#}
with window_interactions as (
    select * from {{ ref('interactions') }}
    where ds between {{ run_date() }} - interval ({{ var('popularity_days') }} - 1) day and {{ run_date() }}
),

active_users as (
    select distinct user_id from {{ ref('stg_events') }} where ds = {{ run_date() }}
),

popular as (
    select
        scene,
        item_id,
        row_number() over (
            partition by scene order by sum(click) desc, count(*) desc, item_id
        ) as popularity_rank
    from window_interactions
    group by scene, item_id
    qualify popularity_rank <= {{ var('candidates_per_scene') }}
),

best_scene as (
    select item_id, scene, popularity_rank
    from popular
    qualify row_number() over (partition by item_id order by popularity_rank, scene) = 1
),

in_stock as (
    select item_id, category_id, price
    from {{ ref('items') }}
    where ds = {{ run_date() }} and in_stock
),

bought as (
    select distinct user_id, item_id from window_interactions where purchase = 1
),

pairs as (
    select
        u.user_id,
        p.item_id,
        s.category_id,
        p.scene,
        cast(null as integer) as position,
        s.price,
        p.popularity_rank
    from active_users as u
    cross join best_scene as p
    inner join in_stock as s on s.item_id = p.item_id
    anti join bought as b on b.user_id = u.user_id and b.item_id = p.item_id
)

-- features as of the end of the run date: the recommendations are for the next day
select x.*, {{ feature_columns() }}
from pairs as x
{{ feature_joins(run_date()) }}
order by x.user_id, x.item_id
