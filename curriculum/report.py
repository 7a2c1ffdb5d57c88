"""The drivers' reports: Markdown tables and the lines about the final model."""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence


def fmt(value: Optional[float], digits: int = 4) -> str:
    """A number with ``digits`` decimals, or '-' for None."""
    return "-" if value is None else f"{value:.{digits}f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def final_summary(final: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The final model's result fields (None while ``--search_only`` left it untrained)."""
    if final is None:
        return {"final_val_accu": None, "final_model": None, "final_run_dir": None}
    return {"final_val_accu": final["result"]["val_accu"], "final_model": final["result"]["best_checkpoint"],
            "final_run_dir": final["run_dir"]}


def final_line(result: Dict[str, Any]) -> str:
    """The report's line about the final model (or that ``--search_only`` stopped before it)."""
    if result["final_model"] is None:
        return "final model: not trained yet (--search_only; the same command without it trains it)"
    return f"final model {result['final_model']} (val accuracy {fmt(result['final_val_accu'])})"
