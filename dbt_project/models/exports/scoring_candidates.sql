{#- The day this export is for: the build's run date, unless the reading session names its own day
    (`set variable tandem_ds = date 'YYYY-MM-DD'`, what outputs/warehouse.py export_day does): a
    night's export reads its own day, whichever night's build ran last. -#}
{%- set day = "coalesce(getvariable('tandem_ds'), " ~ run_date() ~ ")" -%}
-- depends_on: {{ ref('user_history') }} (joined by feature_joins when history_length > 0)
{# Candidate (user, item) pairs to score for the run date, for every user active on the day, from
    four sources over the windows ending at the run date:
      popular   the items clicked by the most users in each scene (`candidates_popular_per_scene`)
      affinity  the items clicked by the most users in the user's top categories (`candidates_per_category` each)
      covisit   items clicked in the same sessions as the items the user clicked (`candidates_covisit`)
      recent    items the user clicked or carted in the last 7 days (`candidates_recent`)
    Out-of-stock items, and (when `exclude_bought`) items the user bought in the window, are removed.
    One row per pair (`source_mask`: 1 popular, 2 affinity, 4 covisit, 8 recent), at most
    `max_candidates_per_user`, with the features
    as of the end of the run date (the recommendations are for the next day). -#}
with window_interactions as (
    select * from {{ ref('interactions') }}
    where ds between {{ day }} - interval ({{ int_setting('popularity_days') }} - 1) day and {{ day }}
),

active_users as (
    select distinct user_id from {{ ref('stg_events') }} where ds = {{ day }}
),

in_stock as (
    select item_id, category_id, price from {{ ref('items') }} where ds = {{ day }} and in_stock
),

item_clicks as (
    -- popularity by how many users clicked (then clicks): a click bot's hundred clicks count once
    select item_id, scene, count(distinct user_id) filter (where click = 1) as clickers,
           sum(click) as clicks, count(*) as exposures
    from window_interactions
    group by item_id, scene
),

popular as (
    select
        u.user_id, p.item_id, p.scene, 'popular' as source, p.source_rank
    from active_users as u
    cross join (
        select
            item_id, scene,
            row_number() over (partition by scene order by clickers desc, clicks desc, exposures desc, item_id) as source_rank
        from item_clicks
        qualify source_rank <= {{ int_setting('candidates_popular_per_scene') }}
    ) as p
),

category_top_items as (
    select
        s.category_id, c.item_id,
        row_number() over (
            partition by s.category_id order by sum(c.clickers) desc, sum(c.clicks) desc, c.item_id
        ) as rank_in_category
    from item_clicks as c
    inner join in_stock as s using (item_id)
    group by s.category_id, c.item_id
    qualify rank_in_category <= {{ int_setting('candidates_per_category') }}
),

affinity as (
    select f.user_id, t.item_id, 'home' as scene, 'affinity' as source,
           (f.category_rank - 1) * {{ int_setting('candidates_per_category') }} + t.rank_in_category as source_rank
    from (
        select user_id, category_id,
               row_number() over (partition by user_id order by f_uc_clicks_30d desc, category_id) as category_rank
        from {{ ref('user_category_features') }}
        where ds = {{ day }} and f_uc_clicks_30d > 0
        qualify category_rank <= 3
    ) as f
    inner join active_users using (user_id)
    inner join category_top_items as t using (category_id)
),

session_clicks as (
    -- sessions of ordinary size only: a click bot's session would tie everything to everything
    select session_id, item_id
    from window_interactions
    where click = 1
      and session_id in (
          select session_id from window_interactions where click = 1
          group by session_id having count(*) between 2 and 30
      )
),

covisit_pairs as (
    select a.item_id as seed, b.item_id as item_id, count(*) as sessions,
           row_number() over (partition by a.item_id order by count(*) desc, b.item_id) as neighbour_rank
    from session_clicks as a
    inner join session_clicks as b on a.session_id = b.session_id and a.item_id != b.item_id
    group by a.item_id, b.item_id
    qualify neighbour_rank <= 20
),

user_seeds as (
    select distinct user_id, item_id as seed
    from window_interactions
    where click = 1 and ds > {{ day }} - interval 7 day
),

covisit as (
    select s.user_id, p.item_id, 'home' as scene, 'covisit' as source,
           row_number() over (partition by s.user_id order by sum(p.sessions) desc, p.item_id) as source_rank
    from user_seeds as s
    inner join active_users using (user_id)
    inner join covisit_pairs as p using (seed)
    group by s.user_id, p.item_id
    qualify source_rank <= {{ int_setting('candidates_covisit') }}
),

recent as (
    select i.user_id, i.item_id, 'home' as scene, 'recent' as source,
           row_number() over (partition by i.user_id order by max(i.ds) desc, max(i.cart) desc, i.item_id) as source_rank
    from window_interactions as i
    inner join active_users using (user_id)
    where (i.click = 1 or i.cart = 1) and i.ds > {{ day }} - interval 7 day
    group by i.user_id, i.item_id
    qualify source_rank <= {{ int_setting('candidates_recent') }}
),

bought as (
    select distinct user_id, item_id from window_interactions where purchase = 1
),

unioned as (
    select * from popular
    union all select * from affinity
    union all select * from covisit
    union all select * from recent
),

pairs as (
    select
        c.user_id,
        c.item_id,
        s.category_id,
        arg_min(c.scene, (c.source_rank, c.scene)) as scene,  -- ties broken by name: deterministic
        cast(null as integer) as position,
        cast(null as varchar) as query,  -- recommendations answer no search query
        s.price,
        -- which sources offered the pair: 1 popular, 2 affinity, 4 covisit, 8 recent (bit_or is
        -- far cheaper than a string aggregate over millions of pairs)
        bit_or(case c.source when 'popular' then 1 when 'affinity' then 2 when 'covisit' then 4 else 8 end)::utinyint
            as source_mask,
        min(c.source_rank) as best_source_rank
    from unioned as c
    inner join in_stock as s using (item_id)
    {% if setting('exclude_bought') -%}
    anti join bought as b on b.user_id = c.user_id and b.item_id = c.item_id
    {%- endif %}
    group by c.user_id, c.item_id, s.category_id, s.price
    qualify row_number() over (
        partition by c.user_id order by min(c.source_rank), count(*) desc, c.item_id
    ) <= {{ int_setting('max_candidates_per_user') }}
)

-- features as of the end of the run date: the recommendations are for the next day
select * replace ({{ uc_no_event_fill() }})
from (
    select x.*, {{ feature_columns() }},
        it.title  -- text input (TANDEM_TEXT): the item's title in the run date's snapshot (query: null)
    from pairs as x
    {{ feature_joins(day, day, day) }}
    left join (select item_id, title from {{ ref('items') }} where ds = {{ day }}) as it
        on it.item_id = x.item_id
) as candidates
order by user_id, item_id
