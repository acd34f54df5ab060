{#- For the run date: landed rows = staged + quarantined + duplicates, counting ROWS (not distinct
    ids). "Landed" comes from the landing zone itself (the footers of the day's accepted files), so a
    row lost or counted twice between landing and staging fails it. -#}
with landed as (
    select landed_rows as n from ({{ landed_rows_per_day(landed_files('events', days='run_date')) }}) where ds = {{ run_date() }}
),

staged as (select count(*) as n from {{ ref('stg_events') }} where ds = {{ run_date() }}),
quarantined as (select count(*) as n from {{ ref('stg_events_quarantine') }} where ds = {{ run_date() }}),
duplicates as (select count(*) as n from {{ ref('stg_events_duplicates') }} where ds = {{ run_date() }})

select
    coalesce((select sum(n) from landed), 0) as landed,
    staged.n as staged,
    quarantined.n as quarantined,
    duplicates.n as duplicates
from staged, quarantined, duplicates
where coalesce((select sum(n) from landed), 0) != staged.n + quarantined.n + duplicates.n
