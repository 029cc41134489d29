{#-
    Models land in the schema they are configured with (`staging`, `features`), not in
    `<target schema>_<custom schema>`: the warehouse layout (docs/architecture.md) is one schema per layer,
    the same in every environment. Models without a custom schema use the target's (`analytics`).
-#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
