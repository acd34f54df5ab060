{#- Over every day up to the run date, day by day (a failing row names the day): the rows of the
    files the landing check accepted = staged + quarantined + duplicates. A warning, not an error: a
    file that lands in a day already built counts when that day is built again (a rerun or a
    backfill), and one that no check has seen (dropped in after the night's landing check) is read
    but not recorded; either should be looked at, neither should stop tonight. -#}
{{ config(severity='warn') }}

with checked as ({{ checked_rows_per_day('events') }}),

counted as (
    select ds, count(*) as n from {{ ref('stg_events') }} where ds <= {{ run_date() }} group by ds
    union all
    select ds, count(*) from {{ ref('stg_events_quarantine') }} where ds <= {{ run_date() }} group by ds
    union all
    select ds, count(*) from {{ ref('stg_events_duplicates') }} where ds <= {{ run_date() }} group by ds
),

per_day as (select ds, sum(n) as accounted from counted group by ds)

select coalesce(c.ds, p.ds) as ds, coalesce(c.checked_rows, 0) as checked, coalesce(p.accounted, 0) as accounted
from checked as c
full outer join per_day as p on p.ds = c.ds
where coalesce(c.checked_rows, 0) != coalesce(p.accounted, 0)
