"""What the user sees while a run trains: rich live bars and a per-class table, or plain log lines.

This is the only module that imports rich (lazily, inside the classes that draw).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, TextIO

from adaptive_lb.callbacks import Callback
from adaptive_lb.metrics import TOP_K, extreme_classes, spread_line

BAR_WIDTH = 20  # characters of the per-class TPR bar


def tpr_style(tpr: float) -> str:
    """Colour for a TPR value: red below 0.7, yellow below 0.85, green above."""
    return "red" if tpr < 0.7 else "yellow" if tpr < 0.85 else "green"


def headline(block: dict | None) -> str:
    """One-line digest of a split's metrics (``None``: the split was not evaluated this epoch)."""
    if block is None:
        return "not evaluated this epoch (train.test_every)"
    return (f"acc {block['accuracy']:.4f} bal {block['balanced_accuracy']:.4f} TPR std {block['tpr_std']:.4f} "
            f"worst {block['worst_class']} {block['worst_tpr']:.4f}")


def shown_rows(tpr: Sequence[float], top_k: int) -> list[int | None]:
    """Class indices of a per-class table's rows: all of them in class order, or (more than ``2 top_k`` classes)
    the ``top_k`` lowest and highest ``tpr`` in ascending order with ``None`` (a "more classes" row) between."""
    picked = extreme_classes(tpr, top_k)
    return list(range(len(tpr))) if picked is None else [*picked[:top_k], None, *picked[top_k:]]


def _rows(table: Any, tpr: Sequence[float], top_k: int, what: str) -> list[int]:
    """The classes ``table`` gets rows for; with many classes, a summary caption on all of them."""
    rows = shown_rows(tpr, top_k)
    if None in rows:
        table.caption, table.caption_justify = spread_line(tpr, what, top_k), "left"
    return rows


def _more(table: Any, hidden: int) -> None:
    table.add_row(f"⋯ {hidden} more classes", *[""] * (len(table.columns) - 1))  # between the lowest and highest


def per_class_table(class_names: Sequence[str], record: dict, title: str = "", top_k: int = TOP_K) -> Any:
    """rich Table: class, held-out TPR (bar), test TPR, and the actuators applied: weight, aug, logit offset.
    More than ``2 top_k`` classes: the ``top_k`` lowest and highest held-out TPR, and a line on all of them."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, title_justify="left", expand=False)
    for col in ("class", "held-out TPR", "", "test TPR", "weight", "aug", "offset"):
        table.add_column(col, justify="left" if col in ("class", "") else "right")
    held = record["heldout"]["tpr"]
    test = record["test"]["tpr"] if record["test"] else None  # None: not evaluated this epoch (test_every)
    for c in _rows(table, held, top_k, "held-out TPR"):
        if c is None:
            _more(table, len(held) - 2 * top_k)
            continue
        bar = Text("█" * round(held[c] * BAR_WIDTH), style=tpr_style(held[c]))
        table.add_row(class_names[c], Text(f"{held[c]:.3f}", style=tpr_style(held[c])), bar,
                      Text(f"{test[c]:.3f}", style=tpr_style(test[c])) if test else "–",
                      f"{record['class_weights'][c]:.3f}", f"{record['aug_intensity'][c]:.2f}",
                      f"{record['logit_margin'][c]:+.2f}")
    return table


SPLIT_LABELS = {"heldout": "held-out (control)", "select": "select", "test": "test"}


def summary_blocks(summary: dict) -> list[tuple[str, dict]]:
    """(label, metrics block) of every split of a summary, raw, then with the post-hoc biases (fitted on select)."""
    out = [(label, summary[key]) for key, label in SPLIT_LABELS.items() if summary.get(key)]
    if "posthoc" in summary:
        p = summary["posthoc"]
        out += [(f"{label}, post-hoc {p['method']}", p[key]) for key, label in SPLIT_LABELS.items()
                if key != "heldout" and p.get(key)]
    return out


def summary_table(summary: dict) -> Any:
    """rich Table of the headline metrics, one column per split (and per split with post-hoc biases)."""
    from rich.table import Table

    table = Table(title="final metrics (last epoch)", title_justify="left")
    table.add_column("metric")
    blocks = summary_blocks(summary)
    for label, _ in blocks:
        table.add_column(label, justify="right")
    for key, label in (("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"),
                       ("tpr_std", "TPR std"), ("tpr_var", "TPR variance"), ("tpr_gap", "TPR max-min gap"),
                       ("worst_tpr", "worst-class TPR")):
        table.add_row(label, *(f"{b[key]:.4f}" for _, b in blocks))
    table.add_row("worst class", *(b["worst_class"] for _, b in blocks))
    return table


def report_table(block: dict, class_names: Sequence[str], title: str, top_k: int = TOP_K) -> Any:
    """rich Table of a per-class report (support, TPR, precision, F1) for ``adaptive-lb eval``; more than
    ``2 top_k`` classes: the ``top_k`` lowest and highest TPR (``top_k`` 0: every class)."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, title_justify="left")
    for col in ("class", "support", "TPR", "precision", "F1"):
        table.add_column(col, justify="left" if col == "class" else "right")
    rows = _rows(table, block["tpr"], top_k, "TPR")
    table.caption = headline(block) + (f"\n{table.caption}" if table.caption else "")
    table.caption_justify = "left"
    for c in rows:
        if c is None:
            _more(table, len(class_names) - 2 * top_k)
            continue
        tpr = block["tpr"][c]
        table.add_row(class_names[c], str(block["support"][c]), Text(f"{tpr:.4f}", style=tpr_style(tpr)),
                      f"{block['precision'][c]:.4f}", f"{block['f1'][c]:.4f}")
    return table


def comparison_table(rows: Sequence[dict[str, Any]], keys: Sequence[tuple[str, str]]) -> Any:
    """rich Table of ``adaptive-lb report``'s run comparison: (mean, std) per metric in ``keys``."""
    from rich.table import Table

    table = Table(title="test metrics, mean ± std over seeds", title_justify="left")
    for col in ("run", "seeds", *(name for _, name in keys), "worst class"):
        table.add_column(col, justify="left" if col in ("run", "worst class") else "right")
    for row in rows:
        label = row["run"] + (f" (post-hoc {row['posthoc']})" if row["posthoc"] else "")
        table.add_row(label, str(row["seeds"]), *(f"{row[k][0]:.4f} ± {row[k][1]:.4f}" for k, _ in keys),
                      row["worst_class"])
    return table


def print_tables(*tables: Any, file: TextIO | None = None) -> None:
    """Print rich renderables (plain characters when ``file`` is not a terminal)."""
    from rich.console import Console

    console = Console(file=file or sys.stdout)
    for table in tables:
        console.print(table)


class RichProgress(Callback):
    """Live epoch and batch bars (images/s, ETA) above a per-class table refreshed every epoch."""

    def __init__(self, console: Any = None, top_k: int = TOP_K) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console, self.top_k = console or Console(), top_k
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                 console=self.console)
        self.live: Any = None
        self.table: Any = None

    def _view(self) -> Any:
        from rich.console import Group

        return Group(self.progress, self.table) if self.table is not None else self.progress

    def on_fit_start(self, trainer: Any) -> None:
        from rich.live import Live

        epochs = trainer.total_epochs
        self.epochs = self.progress.add_task("epochs", total=epochs, completed=trainer.epoch, rate="")
        self.batches = self.progress.add_task("epoch", total=len(trainer.data.train), rate="")
        if trainer.last_record:
            self.table = per_class_table(trainer.data.class_names, trainer.last_record, "resumed from checkpoint",
                                         self.top_k)
        self.live = Live(self._view(), console=self.console, refresh_per_second=4)
        self.live.start()

    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        self.progress.reset(self.batches, total=len(trainer.data.train),
                            description=f"epoch {epoch + 1}/{trainer.total_epochs}", rate="")

    def on_train_batch_end(self, trainer: Any, batch: int, images: int) -> None:
        self.progress.update(self.batches, completed=images)

    def on_train_progress(self, trainer: Any, images: int, loss: float) -> None:
        speed = self.progress.tasks[self.batches].speed or 0.0
        self.progress.update(self.batches, rate=f"{speed:,.0f} img/s  loss {loss:.4f}")

    def on_epoch_end(self, trainer: Any, record: dict) -> None:
        self.progress.advance(self.epochs)
        prefix = f"epoch {record['epoch']}/{trainer.total_epochs}  "
        title = (f"{prefix}held-out {headline(record['heldout'])}\n"
                 f"{' ' * len(prefix)}test     {headline(record['test'])}")
        self.table = per_class_table(trainer.data.class_names, record, title, self.top_k)
        self.live.update(self._view(), refresh=True)

    def on_fit_end(self, trainer: Any, summary: dict) -> None:
        self.live.stop()
        self.console.print(summary_table(summary))

    def on_exception(self, trainer: Any, exc: BaseException) -> None:
        if self.live is not None:
            self.live.stop()


class PlainProgress(Callback):
    """One log line per epoch, for logs and pipes (and ``--quiet``)."""

    def __init__(self, file: TextIO | None = None, top_k: int = TOP_K) -> None:
        self.file, self.top_k = file or sys.stdout, top_k

    def _print(self, text: str) -> None:
        print(text, file=self.file, flush=True)

    def on_fit_start(self, trainer: Any) -> None:
        d, cfg = trainer.data, trainer.cfg
        self._print(f"training {cfg.model.name} on {cfg.data.name}: {len(d.train)} train / {len(d.heldout)} "
                    f"held-out / {len(d.test)} test {'names' if d.is_text else 'images'}, {d.num_classes} classes, "
                    f"device {trainer.device}, "
                    f"epochs {trainer.epoch + 1}..{trainer.total_epochs}")

    def on_epoch_end(self, trainer: Any, record: dict) -> None:
        t = record["time_s"]
        self._print(f"epoch {record['epoch']}/{trainer.total_epochs} loss {record['train_loss']:.4f} "
                    f"lr {record['lr']:.4g} | held-out {headline(record['heldout'])} | test "
                    f"{headline(record['test'])} | {record['train_images_per_s']:,.0f} img/s, "
                    f"{sum(t.values()):.1f}s")

    def on_fit_end(self, trainer: Any, summary: dict) -> None:
        rec, names, held = trainer.last_record, summary["class_names"], summary["heldout"]["tpr"]
        width = max(20, *(len(n) for n in names))  # long labels such as "United States (US)"
        self._print(f"{'class':<{width}} held-out TPR  test TPR  weight   aug  offset")
        rows = shown_rows(held, self.top_k)
        for c in rows:
            if c is None:
                self._print(f"⋯ {len(names) - 2 * self.top_k} more classes")
                continue
            self._print(f"{names[c]:<{width}} {held[c]:>12.4f} {summary['test']['tpr'][c]:>9.4f} "
                        f"{rec['class_weights'][c]:>7.3f} {rec['aug_intensity'][c]:>5.2f} "
                        f"{rec['logit_margin'][c]:>+7.2f}")
        if None in rows:
            self._print(spread_line(held, "held-out TPR", self.top_k))
        if "posthoc" in summary:
            p, bias = summary["posthoc"], summary["posthoc"]["bias"]
            values = (" ".join(f"{b:+.2f}" for b in bias) if None not in rows else
                      f"from {min(bias):+.2f} to {max(bias):+.2f} over {len(bias)} classes (all in summary.json)")
            chosen = (f", spread weight {p['choice']['spread_weight']:g} chosen on select, cross-fitted"
                      if p.get("choice") else "")
            self._print(f"post-hoc {p['method']} (fitted on {p.get('fitted_on', 'heldout')}{chosen}): biases {values}")
        for label, block in summary_blocks(summary):
            self._print(f"final {label:<28} {headline(block)}")


def create_progress(quiet: bool, stream: TextIO | None = None, top_k: int = TOP_K) -> Callback:
    """Rich live display on a terminal; plain log lines with ``quiet`` or when output is piped."""
    stream = stream or sys.stdout
    if quiet or not stream.isatty():
        return PlainProgress(stream, top_k)
    return RichProgress(top_k=top_k)


# ---------------------------------------------------------------------------------------------- tune
def _values_text(row: dict) -> str:
    vals = row["values"]
    if not vals:
        return "–"
    text = f"var {vals[0]:.5f} (std {vals[0] ** 0.5:.4f})"
    return text + (f", bal. acc {vals[1]:.4f}" if len(vals) > 1 else "")


def _params_text(params: dict) -> str:
    return "  ".join(f"{k.split('.')[-1]}={v:.4g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                     for k, v in params.items())


class PlainTuneView:
    """Study progress as log lines: one per finished trial of this process, plus notes."""

    def __init__(self, header: str, file: TextIO | None = None) -> None:
        self.header, self.file = header, file or sys.stdout
        self.current: int | None = None  # number of this process's running trial

    def _print(self, text: str) -> None:
        print(text, file=self.file, flush=True)

    def start(self) -> None:
        self._print(self.header)

    def note(self, text: str) -> None:
        self._print(text)

    def trial_start(self, label: str, params: dict, epochs: int, number: int | None = None) -> None:
        """A trial (``number``) or the reference run starts in this process."""
        self.current = number
        if number is None:
            self._print(f"{label}: training {epochs} epochs")

    def trial_epoch(self, record: dict) -> None:
        """Called after every epoch of this process's running trial."""

    def refresh(self, snap: dict) -> None:
        """Called after each finished trial with ``tune.final.snapshot``."""
        mine = [r for r in snap["recent"] if r["number"] == self.current]
        if mine:
            r = mine[0]
            acc = f" held-out acc {r['accuracy']:.4f}" if r["accuracy"] is not None else ""
            guard = {True: "", False: " (fails the accuracy guard)", None: ""}[r["feasible"]]
            self._print(f"trial {r['number']} {r['state']}: {_values_text(r)}{acc}{guard} | "
                        f"{_params_text(r['params'])}{' | ' + r['note'] if r['note'] else ''}")
        c, best = snap["counts"], snap["best"]
        self._print(f"study: {snap['total']} trials ({c['complete']} complete, {c['pruned']} pruned, {c['fail']} "
                    f"failed, {c['running']} running); best "
                    + (f"#{best['number']} {_values_text(best)}" if best else "none yet"))

    def stop(self) -> None:
        """End of the trials."""


class RichTuneView(PlainTuneView):
    """Live panel: trial counts by state, best so far, the running trial's epoch bar, the recent trials."""

    def __init__(self, header: str, console: Any = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        super().__init__(header)
        self.console = console or Console()
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[value]}"), TimeElapsedColumn(), console=self.console)
        self.task = self.progress.add_task("waiting for a trial", total=1, value="")
        self.snap: dict | None = None
        self.live: Any = None

    def start(self) -> None:
        from rich.live import Live

        self.live = Live(get_renderable=self._view, console=self.console, refresh_per_second=2)
        self.live.start()

    def note(self, text: str) -> None:
        if self.live is not None:
            self.live.console.print(text)
        else:
            self.console.print(text)

    def trial_start(self, label: str, params: dict, epochs: int, number: int | None = None) -> None:
        self.current = number
        self.progress.reset(self.task, total=epochs, description=label, value=_params_text(params))

    def trial_epoch(self, record: dict) -> None:
        var = record["heldout"]["tpr_var"]
        self.progress.update(self.task, completed=record["epoch"],
                             value=f"held-out TPR var {var:.5f}  acc {record['heldout']['accuracy']:.4f}")

    def refresh(self, snap: dict) -> None:
        self.snap = snap

    def _view(self) -> Any:
        from rich.console import Group
        from rich.table import Table

        parts: list[Any] = [self.header]
        if self.snap:
            c, best = self.snap["counts"], self.snap["best"]
            parts.append(f"trials {self.snap['total']}: [green]{c['complete']} complete[/]  [yellow]{c['pruned']} "
                         f"pruned[/]  [red]{c['fail']} failed[/]  {c['running']} running  {c['waiting']} queued")
            parts.append("best " + (f"#{best['number']} {_values_text(best)}  acc {best['accuracy']:.4f}  "
                                    f"{_params_text(best['params'])}" if best else "none yet"))
            table = Table("trial", "state", "objective", "held-out acc", "guard", "parameters", "note",
                          title="recent trials", title_justify="left")
            colours = {"complete": "green", "pruned": "yellow", "fail": "red"}
            for r in self.snap["recent"]:
                state = f"[{colours.get(r['state'], 'white')}]{r['state']}[/]"
                acc = f"{r['accuracy']:.4f}" if r["accuracy"] is not None else "–"
                guard = {True: "ok", False: "[red]fails[/]", None: "–"}[r["feasible"]]
                table.add_row(str(r["number"]), state, _values_text(r), acc, guard, _params_text(r["params"]),
                              r["note"])
            parts.append(table)
        parts.append(self.progress)
        return Group(*parts)

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()  # the last frame stays on screen
            self.live = None


def create_tune_view(header: str, quiet: bool, stream: TextIO | None = None) -> PlainTuneView:
    """Rich live panel on a terminal; plain lines with ``quiet`` or when output is piped."""
    stream = stream or sys.stdout
    if quiet or not stream.isatty():
        return PlainTuneView(header, stream)
    return RichTuneView(header)
