"""Datatype presets, as DeepVariant's --model_type: what kind of sequencing the reads are, and so which shipped
model calls them, where calling runs and how the reads are prepared.

- `wgs`: Illumina whole genome. The whole reference (or --regions); duplicates as the aligner left them.
- `wes`: Illumina whole exome. Called over the capture targets (a BED, required) padded by 50 bp on each side
  and merged; PCR duplicates are marked first (`deepflows mark-duplicates`; make-examples skips reads flagged
  0x400), as exome libraries have many.

More presets (long reads) join by an entry in PRESETS. Nothing here reads files: a preset names its model's
directory, whose absence is said when a run needs it (deepflows.config.check_input).
"""

from __future__ import annotations

from dataclasses import dataclass

from deepflows.errors import UserError


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    model: str  # the shipped model's directory, relative to the deepflows checkout
    needs_targets: bool = False  # calling runs over capture targets, which must be given
    target_padding: int = 0  # bp added on each side of every target (the padded targets are merged)
    mark_duplicates: bool = False  # mark PCR duplicates before make_examples (config: make_examples.mark_duplicates)


PRESETS: dict[str, Preset] = {
    "wgs": Preset("wgs", "Illumina whole genome", "resources/models/wgs-illumina"),
    "wes": Preset("wes", "Illumina whole exome (capture targets)", "resources/models/wes-illumina",
                  needs_targets=True, target_padding=50, mark_duplicates=True),
}  # fmt: skip

DEFAULT = "wgs"


def get_preset(name: str, option: str = "--preset") -> Preset:
    """The preset called `name`; one line naming `option` and the known presets for any other name."""
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        raise UserError(f"{option} {name!r}: unknown preset (known: {', '.join(PRESETS)})") from None
