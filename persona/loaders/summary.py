"""What a load produced: rows per canonical table and every assumption made on the way."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class LoadSummary(BaseModel):
    """Result of one loader run, also written to ``<out_dir>/load_summary.json``."""

    model_config = ConfigDict(frozen=True)

    source: str = Field(description="Source name, e.g. 'amazon_games' or 'open_bandit/random/all'.")
    input_path: Path = Field(description="The resolved input file or folder that was read.")
    out_dir: Path = Field(description="Data directory; tables are under out_dir/raw/<table>/.")
    rows: dict[str, int] = Field(description="Rows written per canonical table.")
    notes: list[str] = Field(
        default_factory=list,
        description="Derived or assumed values, rows merged or skipped, with counts.",
    )
    extra_files: dict[str, Path] = Field(
        default_factory=dict, description="Other files written (e.g. the external-id map)."
    )

    def render(self) -> str:
        """A short human-readable report (for the CLI)."""
        lines = [f"{self.source}: {self.input_path} -> {self.out_dir}"]
        lines += [f"  {table}: {count:,} rows" for table, count in self.rows.items()]
        lines += [f"  {name}: {path}" for name, path in self.extra_files.items()]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)
