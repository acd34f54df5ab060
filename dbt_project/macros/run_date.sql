{#- The business day being processed. Required at execution time; parsing works without it. -#}
{% macro run_date() -%}
  {%- set d = var('run_date', none) -%}
  {%- if execute and d is none -%}
    {{ exceptions.raise_compiler_error("dbt var 'run_date' (YYYY-MM-DD) is required: dbt build --vars '{run_date: 2026-01-31}'") }}
  {%- endif -%}
  cast('{{ d or "1970-01-01" }}' as date)
{%- endmacro %}

{#- Delete the run date's rows before an incremental append, so a rerun replaces the day. -#}
{% macro delete_run_date(column='ds') -%}
  {%- if is_incremental() -%}
    delete from {{ this }} where {{ column }} = {{ run_date() }}
  {%- endif -%}
{%- endmacro %}

{#- Which days an incremental model builds: the run date alone when the table exists, every day up
    to the run date on its first build or a --full-refresh (never a day after it: no leakage). -#}
{% macro days_to_build(column='ds') -%}
  {%- if is_incremental() -%}
    {{ column }} = {{ run_date() }}
  {%- else -%}
    {{ column }} <= {{ run_date() }}
  {%- endif -%}
{%- endmacro %}
