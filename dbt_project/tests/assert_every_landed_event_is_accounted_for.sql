{#- For the run date: landed rows = staged rows + quarantined rows + removed duplicates.
    Computed from the landing zone itself, so a row lost between landing and staging fails it. -#}
with landed as (
    select
        count(*) as n_landed,
        count(*) filter (where reject_reason is null) as n_valid,
        count(distinct event_id) filter (where reject_reason is null) as n_valid_distinct
    from {{ ref('stg_events__landed') }}
    where ds = {{ run_date() }}
),

staged as (select count(*) as n from {{ ref('stg_events') }} where ds = {{ run_date() }}),
quarantined as (select count(*) as n from {{ ref('stg_events_quarantine') }} where ds = {{ run_date() }})

select *
from landed, staged, quarantined
where landed.n_landed != staged.n + quarantined.n + (landed.n_valid - landed.n_valid_distinct)
   or staged.n != landed.n_valid_distinct
