{#- The day this export is for: the build's run date, unless the reading session names its own day
    (`set variable tandem_ds = date 'YYYY-MM-DD'`, what outputs/warehouse.py export_day does): a
    night's export reads its own day, whichever night's build ran last. -#}
{%- set day = "coalesce(getvariable('tandem_ds'), " ~ run_date() ~ ")" -%}
-- depends_on: {{ ref('user_history') }} (joined by feature_joins when history_length > 0)
{# Exposures of the training window (the `train_window_days` days ending at the run date; the run
    date itself is the validation day), with labels and the point-in-time features as of the day
    BEFORE each exposure: nothing from the exposure's own day leaks into its features. -#}
select * replace ({{ uc_no_event_fill() }})
from (
select
    x.ds, x.exposure_id, x.user_id, x.item_id, x.category_id, x.scene, x.position, x.price,
    x.click, x.cart, x.purchase, x.fav, x.exposure,
    {{ feature_columns() }},
    -- text inputs (TANDEM_TEXT): the exposure's search query (null in other scenes), and the item's
    -- title in the latest snapshot before the exposure's day (the day before, as the item features)
    x.query, it.title
from {{ ref('interactions') }} as x
{{ feature_joins('x.ds - 1',
    day ~ " - interval (" ~ int_setting('train_window_days') ~ ") day", day ~ " - interval 1 day") }}
asof left join (select item_id, ds, title from {{ ref('items') }} where ds < {{ day }}) as it
    on it.item_id = x.item_id and it.ds < x.ds
where x.ds between {{ day }} - interval ({{ int_setting('train_window_days') }} - 1) day and {{ day }}
) as samples
order by ds, exposure_id
