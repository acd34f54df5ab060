{#- The day this export is for: the build's run date, unless the reading session names its own day
    (`set variable tandem_ds = date 'YYYY-MM-DD'`, what outputs/warehouse.py export_day does): a
    night's export reads its own day, whichever night's build ran last. -#}
{%- set day = "coalesce(getvariable('tandem_ds'), " ~ run_date() ~ ")" -%}
{#- Per item exposed on the run date, for the anomaly detector: the day's exposures, clicks and
    clicking users against the item's own trailing 7 days (CTR jumps: click spam; exposures without a
    single click: broken tracking), and how concentrated its clicks are on one user. Real exposures
    only: the sampled negatives of view-only days are no behaviour. `ctr` and `ctr_trailing_7d` are
    over impressions: a view-only day has none (every real exposure is a view), so they are null
    there and no CTR reason fires. -#}
with today as (
    select
        item_id,
        count(*) as exposures,
        sum(click) as clicks,
        count(distinct user_id) filter (where click = 1) as clicking_users,
        sum(purchase) as purchases,
        count(*) filter (where exposure = 'impression') as impressions,
        sum(click) filter (where exposure = 'impression') as impression_clicks
    from {{ ref('interactions') }}
    where ds = {{ day }} and exposure <> 'sampled'
    group by item_id
),

top_clicker as (
    select item_id, max(n) as top_user_clicks
    from (
        select item_id, user_id, sum(click) as n
        from {{ ref('interactions') }}
        where ds = {{ day }} and exposure <> 'sampled'
        group by item_id, user_id
    )
    group by item_id
),

prior_week as (
    select item_id, sum(exposures) as exposures_7d, sum(clicks) as clicks_7d
    from {{ ref('item_day_stats') }}
    where ds between {{ day }} - interval 7 day and {{ day }} - 1
    group by item_id
)

select
    {{ day }} as ds,
    t.item_id,
    t.exposures::bigint as exposures,
    t.clicks::bigint as clicks,
    t.clicking_users::bigint as clicking_users,
    t.purchases::bigint as purchases,
    (t.impression_clicks / nullif(t.impressions, 0))::double as ctr,
    case when t.impressions > 0 then
        {{ smoothed_rate('coalesce(p.clicks_7d, 0)', 'coalesce(p.exposures_7d, 0)', 0.1) }}
    end::double as ctr_trailing_7d,
    coalesce(p.exposures_7d, 0)::bigint as exposures_trailing_7d,
    (coalesce(c.top_user_clicks, 0) / nullif(t.clicks, 0))::double as top_user_click_share
from today as t
left join prior_week as p using (item_id)
left join top_clicker as c using (item_id)
order by t.item_id
