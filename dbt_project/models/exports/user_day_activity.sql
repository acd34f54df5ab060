{#- Behaviour of each user active on the run date, for the anomaly detector: volumes, rates and
    how regular the gaps between clicks are (bots click like clockwork). -#}
with events as (
    select * from {{ ref('stg_events') }} where ds = {{ run_date() }}
),

click_gaps as (
    select
        user_id,
        epoch(event_time - lag(event_time) over (partition by user_id order by event_time, event_id)) as gap_s
    from events
    where event_type = 'click'
),

gap_stats as (
    select user_id, avg(gap_s) as mean_click_gap_s, stddev_pop(gap_s) as std_click_gap_s
    from click_gaps
    where gap_s is not null
    group by user_id
)

select
    {{ run_date() }} as ds,
    e.user_id,
    count(*)::bigint as events,
    count(distinct e.session_id)::bigint as sessions,
    count(*) filter (where e.event_type = 'impression')::bigint as impressions,
    count(*) filter (where e.event_type = 'click')::bigint as clicks,
    count(*) filter (where e.event_type = 'cart')::bigint as carts,
    count(*) filter (where e.event_type = 'purchase')::bigint as purchases,
    coalesce(sum(e.price) filter (where e.event_type = 'purchase'), 0)::double as spend,
    count(distinct e.item_id)::bigint as distinct_items,
    g.mean_click_gap_s,
    g.std_click_gap_s
from events as e
left join gap_stats as g using (user_id)
group by e.user_id, g.mean_click_gap_s, g.std_click_gap_s
order by e.user_id
