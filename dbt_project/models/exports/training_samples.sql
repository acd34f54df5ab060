-- depends_on: {{ ref('user_history') }} (joined by feature_joins when history_length > 0)
{# Exposures of the training window (the `train_window_days` days ending at the run date; the run
    date itself is the validation day), with labels and the point-in-time features as of the day
    BEFORE each exposure: nothing from the exposure's own day leaks into its features. -#}
select
    x.ds, x.exposure_id, x.user_id, x.item_id, x.category_id, x.scene, x.position, x.price,
    x.click, x.cart, x.purchase,
    {{ feature_columns() }}
from {{ ref('interactions') }} as x
{{ feature_joins('x.ds - 1',
    run_date() ~ " - interval (" ~ int_setting('train_window_days') ~ ") day", run_date() ~ " - interval 1 day") }}
where x.ds between {{ run_date() }} - interval ({{ int_setting('train_window_days') }} - 1) day and {{ run_date() }}
order by x.ds, x.exposure_id
