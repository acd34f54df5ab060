{#- Exposures of the training window: the `train_window_days` days ending at the run date. The run
    date itself is the held-out validation day. Exported to Parquet for the (GPU) trainer. -#}
select
    ds, exposure_id, user_id, item_id, category_id, scene, position, price, click, cart, purchase
from {{ ref('interactions') }}
where ds between {{ run_date() }} - interval ({{ var('train_window_days') }} - 1) day and {{ run_date() }}
order by ds, exposure_id
