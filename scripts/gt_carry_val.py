"""Exploration (not the default): greater-than seed S at the defaults, but K of the 40 validation prompts are carry
years (start year ends in 9) instead of the default's (`val_share`: 7; their share of the draw is ~4); patching
and test as the default draws them.
The exploration draws its own validation split with `bench extract`'s `data` parameter. Its numbers are in
results/gt-carry-val-smollm2-135m/.
    python scripts/gt_carry_val.py S K OUT [DEVICE]"""
import sys

from bench.verbs.extract import ExtractArgs, extract
from tasks.data import Split, TaskDataModule

S, K, OUT = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
DEVICE = sys.argv[4] if len(sys.argv) > 4 else "cpu"


class CarryVal(TaskDataModule):
    def setup(self, stage=None):
        if self.splits is not None:
            return
        super().setup(stage)
        used = {e.prompt for name in ("patching", "val", "test") for e in self.splits[name].examples}
        pool = [e for e in self.task.examples(self.tokenizer, 1500, self.seed + 1000) if e.prompt not in used]
        carry = [e for e in pool if self.task.stratum(e)][:K]  # greater-than's stratum: the start year ends in 9
        other = [e for e in pool if not self.task.stratum(e)][:len(self.splits["val"]) - K]
        self.splits["val"] = Split("val", tuple(carry + other))
        print(f"val: {len(carry)} carry of {len(self.splits['val'])}")


print(extract(ExtractArgs(task="greater-than", seed=S, device=DEVICE, out=OUT), data=CarryVal))
