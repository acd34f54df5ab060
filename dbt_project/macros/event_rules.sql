{#- The business date of a UTC timestamp, in the business_tz setting (TANDEM_BUSINESS_TZ). -#}
{% macro business_date(ts) -%}
  cast(timezone({{ sql_string(setting('business_tz')) }}, cast({{ ts }} as timestamptz)) as date)
{%- endmacro %}

{#- Reason a landed event row cannot be staged, or null when it is valid. One place for the rules,
    used by stg_events (keeps reason is null) and stg_events_quarantine (keeps the rest).
    Late events (business date before the folder's ds) stay valid up to `late_days_allowed` days:
    they count in the day they landed (see stg_events). -#}
{% macro event_reject_reason() -%}
  case
    when event_id is null then 'null_event_id'
    when user_id is null then 'null_user_id'
    when item_id is null then 'null_item_id'
    when event_time is null then 'null_event_time'
    when lower(event_type) not in {{ sql_string_list(setting('event_types')) }}
      or event_type is null then 'unknown_event_type'
    when price < 0 or price > 1e7 then 'price_out_of_range'
    when {{ business_date('event_time') }} > ds then 'future_event_time'
    when {{ business_date('event_time') }} < ds - interval ({{ int_setting('late_days_allowed') }}) day then 'late_beyond_allowed'
  end
{%- endmacro %}

{#- The landed Parquet files of `table` as a list of paths. `days`: 'built' (the days the calling
    model builds: the run date's folder when it is incremental, so a night opens no other day's file;
    every day up to the run date on a first build or a --full-refresh, never a later day) or
    'run_date' (that folder only). Listed when the SQL is compiled (DuckDB's glob); names starting
    with . or _ (files being written) and folders that are not a valid ds=YYYY-MM-DD are skipped. The
    landing check (mtl_model.landing_check) has moved every file that breaks the contract aside, so
    these are the accepted files. -#}
{% macro landed_files(table, days='built') -%}
  {%- if not execute -%}{{ return([]) }}{%- endif -%}
  {%- set upto = run_date() -%}
  {%- set one_day = days == 'run_date' or (days == 'built' and is_incremental()) -%}
  {%- set folder = 'ds=' ~ var('run_date') if one_day else 'ds=*' -%}
  {%- set pattern = glob_literal(env_var('TANDEM_LANDING_DIR')) ~ '/' ~ table ~ '/' ~ folder ~ '/*.parquet' -%}
  {%- set query -%}
    select file from (
        select file, regexp_extract(file, '/ds=([^/]*)/([^/]*)$', ['day', 'name']) as part
        from glob({{ sql_string(pattern) }})
    )
    where regexp_full_match(part.day, '[0-9]{4}-[0-9]{2}-[0-9]{2}')
      and try_cast(part.day as date) <= {{ upto }}
      and not starts_with(part.name, '.') and not starts_with(part.name, '_')
    order by file
  {%- endset -%}
  {{ return(run_query(query).columns[0].values() | list) }}
{%- endmacro %}

{#- Rows per day (ds, checked_rows) of the files of `table` that the landing check accepted, as it
    recorded them (landing/_checked/<table>/ds=D.json), for every day up to the run date. -#}
{% macro checked_rows_per_day(table) -%}
  {%- set pattern = glob_literal(env_var('TANDEM_LANDING_DIR')) ~ '/_checked/' ~ table ~ '/ds=*.json' -%}
  {%- set manifests = run_query('select file from glob(' ~ sql_string(pattern) ~ ') order by file').columns[0].values() | list if execute else [] -%}
  {%- if manifests -%}
    select cast(ds as date) as ds, sum(f.rows)::bigint as checked_rows
    from (
        select ds, unnest(files) as f
        from read_json({{ sql_path_list(manifests) }}, format = 'auto',
            columns = {ds: 'varchar', files: 'struct(name varchar, rows bigint)[]'}, ignore_errors = true)
    )
    where try_cast(ds as date) <= {{ run_date() }}
    group by 1
  {%- else -%}
    select null::date as ds, null::bigint as checked_rows where false
  {%- endif -%}
{%- endmacro %}

{#- A SQL list literal of paths: ['/a/x.parquet', '/b/y.parquet'] (quotes doubled). -#}
{% macro sql_path_list(files) -%}
  [{%- for f in files %}{{ sql_string(f) }}{{ ", " if not loop.last }}{% endfor -%}]
{%- endmacro %}

{#- The rows of `files` with every column in `columns` (null where no file has it; extra columns
    kept), `ds` from the folder, `landed_file` (table/ds=D/name) and `landed_row` (0-based row in
    its file). Without files: no rows, same columns. -#}
{% macro read_landed(files, columns) -%}
    select
        {%- for c in columns %}
        {{ c }},
        {%- endfor %}
        cast(regexp_extract(filename, '/ds=([^/]*)/[^/]*$', 1) as date) as ds,
        regexp_extract(filename, '[^/]+/ds=[^/]*/[^/]*$') as landed_file,
        cast(file_row_number as bigint) as landed_row
    from (
        select {% for c in columns %}null as {{ c }}, {% endfor %}null as filename, null as file_row_number
        where false
        {%- if files %}
        union all by name
        select * from read_parquet({{ sql_path_list(files) }},
            union_by_name = true, filename = true, file_row_number = true, hive_partitioning = false)
        {%- endif %}
    )
{%- endmacro %}

{#- Rows per landed day of `files` (ds, landed_rows), from the Parquet footers. -#}
{% macro landed_rows_per_day(files) -%}
  {%- if files -%}
    select cast(regexp_extract(file_name, '/ds=([^/]*)/[^/]*$', 1) as date) as ds, sum(num_rows)::bigint as landed_rows
    from parquet_file_metadata({{ sql_path_list(files) }})
    group by 1
  {%- else -%}
    select null::date as ds, null::bigint as landed_rows where false
  {%- endif -%}
{%- endmacro %}
