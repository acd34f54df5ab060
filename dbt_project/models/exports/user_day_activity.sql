{#- The day this export is for: the build's run date, unless the reading session names its own day
    (`set variable tandem_ds = date 'YYYY-MM-DD'`, what outputs/warehouse.py export_day does): a
    night's export reads its own day, whichever night's build ran last. -#}
{%- set day = "coalesce(getvariable('tandem_ds'), " ~ run_date() ~ ")" -%}
{#- Behaviour of each user active on the run date, for the anomaly detector: volumes, rates, spend,
    account age (new accounts buying big: fraud) and how regular the gaps between clicks are (bots
    click like clockwork). -#}
with events as (
    select * from {{ ref('stg_events') }} where ds = {{ day }}
),

click_gaps as (
    select
        user_id,
        epoch_us(event_time) - lag(epoch_us(event_time)) over (
            partition by user_id order by event_time, event_id
        ) as gap_us
    from events
    where event_type = 'click'
),

-- integer sums are exact, so mean and spread do not depend on DuckDB's parallel sum order
gap_stats as (
    select
        user_id,
        count(*) as n,
        sum(gap_us)::hugeint as s1,
        sum(gap_us::hugeint * gap_us) as s2
    from click_gaps
    where gap_us is not null
    group by user_id
),

gap_moments as (
    select
        user_id,
        s1 / n / 1e6 as mean_click_gap_s,
        sqrt(greatest((s2 - s1 * s1 / n) / n, 0)) / 1e6 as std_click_gap_s
    from gap_stats
)

select
    {{ day }} as ds,
    e.user_id,
    count(*)::bigint as events,
    count(distinct e.session_id)::bigint as sessions,
    count(*) filter (where e.event_type = 'impression')::bigint as impressions,
    count(*) filter (where e.event_type = 'click')::bigint as clicks,
    count(*) filter (where e.event_type = 'cart')::bigint as carts,
    count(*) filter (where e.event_type = 'purchase')::bigint as purchases,
    coalesce(sum(e.price::decimal(18, 2)) filter (where e.event_type = 'purchase'), 0)::double as spend,
    count(distinct e.item_id)::bigint as distinct_items,
    g.mean_click_gap_s,
    g.std_click_gap_s,
    ({{ day }} - any_value(u.signup_date))::integer as account_age_days
from events as e
left join gap_moments as g using (user_id)
left join {{ ref('users') }} as u on u.user_id = e.user_id and u.ds = e.ds
group by e.user_id, g.mean_click_gap_s, g.std_click_gap_s
order by e.user_id
