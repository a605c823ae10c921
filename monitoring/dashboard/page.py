"""Render panels into one self-contained HTML page (plotly.js inlined once: no network needed)."""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import UTC, datetime

import plotly.graph_objects as go
import plotly.io as pio
from jinja2 import Environment, select_autoescape


@dataclass(frozen=True)
class Panel:
    """One section of the page. ``body`` is trusted HTML built by this package; ``missing``
    says what to run when the panel's input does not exist yet."""

    panel_id: str
    title: str
    body: str
    missing: str | None = None


def figure_html(figure: go.Figure, div_id: str) -> str:
    """A figure as a div (plotly.js is added once by :func:`render_page`)."""
    figure.update_layout(
        margin={"l": 50, "r": 20, "t": 40, "b": 40}, height=360, template="plotly_white"
    )
    return pio.to_html(
        figure,
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        config={"displaylogo": False},
    )


def table_html(rows: list[dict[str, object]], columns: list[str]) -> str:
    """A plain HTML table (values escaped)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in columns) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(_fmt(v) for v in value)
    return "" if value is None else str(value)


_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
 body { font-family: system-ui, sans-serif; margin: 0 2rem 2rem; color: #1d2733; }
 header { padding: 1rem 0; border-bottom: 1px solid #dde3ea; }
 nav a { margin-right: 1rem; }
 section { margin-top: 2rem; }
 .missing { color: #8a5a00; background: #fff6e0; padding: .5rem 1rem; }
 table { border-collapse: collapse; font-size: .9rem; }
 th, td { border-bottom: 1px solid #e6eaef; padding: .25rem .6rem; text-align: left; }
</style>
<script>{{ plotly_js }}</script>
</head><body>
<header><h1>{{ title }}</h1><div>generated {{ generated_at }} · {{ source }}</div>
<nav>{% for p in panels %}<a href="#{{ p.panel_id }}">{{ p.title }}</a>{% endfor %}</nav></header>
{% for p in panels %}
<section id="{{ p.panel_id }}" class="panel"><h2>{{ p.title }}</h2>
{% if p.missing %}<p class="missing">not available yet: {{ p.missing }}</p>{% else %}{{ p.body | safe }}{% endif %}
</section>
{% endfor %}
</body></html>
"""


def render_page(panels: list[Panel], title: str, source: str) -> str:
    env = Environment(autoescape=select_autoescape(default=True))
    template = env.from_string(_TEMPLATE)
    return template.render(
        title=title,
        source=source,
        generated_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        panels=panels,
        plotly_js=_plotly_js(),
    )


def _plotly_js() -> str:
    # Inline and unescaped: it is the library's own bundle, not data.
    from markupsafe import Markup
    from plotly.offline import get_plotlyjs

    return Markup(get_plotlyjs())
