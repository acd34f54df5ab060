{#- A Tandem setting. mtl_model.config.Settings.dbt_vars() passes every setting the SQL reads as a dbt
    var on each invocation (the DAG, `tandem`, the tests), so there is one source of defaults: the
    Settings class. Required when SQL is compiled; parsing (dbt ls, cosmos) works without it. -#}
{% macro setting(name) -%}
  {%- set value = var(name, none) -%}
  {%- if value is none and execute -%}
    {{ exceptions.raise_compiler_error("dbt var '" ~ name ~ "' is missing: Tandem passes its settings as vars (mtl_model.config.Settings.dbt_vars); run dbt through mtl_model.pipeline.dbt.dbt_command, or pass --vars") }}
  {%- endif -%}
  {{ return(value) }}
{%- endmacro %}

{#- An integer setting, rendered as a number (never as text spliced into SQL). -#}
{% macro int_setting(name) -%}
  {{ return((setting(name) or 0) | int) }}
{%- endmacro %}

{#- A SQL string literal of any value, quotes doubled. -#}
{% macro sql_string(value) -%}
  '{{ (value or "") | string | replace("'", "''") }}'
{%- endmacro %}

{#- A parenthesised list of SQL string literals, e.g. ('click', 'cart'). -#}
{% macro sql_string_list(values) -%}
  ({%- for v in (values or ['']) %}{{ sql_string(v) }}{{ ", " if not loop.last }}{% endfor -%})
{%- endmacro %}

{#- A path as a literal part of a DuckDB glob pattern: `[`, `*` and `?` (which glob() would read as
    pattern characters, e.g. a TANDEM_HOME under `/data/shop[eu]/`) each in a one-character class. -#}
{% macro glob_literal(path) -%}
  {{ return((path or "") | string | replace("[", "[[]") | replace("*", "[*]") | replace("?", "[?]")) }}
{%- endmacro %}
