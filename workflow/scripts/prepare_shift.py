"""Rule prepare_shift_<name>: the adapt / test split of every part of one shifted data set."""

from pathlib import Path

from robustsoup.data import prepare_shift_splits
from robustsoup.snakemake_job import snakemake_job

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:
        data = job.config["data"]
        params = snakemake.params
        parts = list(params.parts)
        # The first output is the first part's adapt split: <out>/adapt.* or <out>/<corruption>/<severity>/adapt.*
        first = Path(snakemake.output[0])
        out_dir = first.parent if parts == ["all"] else first.parents[2]
        prepare_shift_splits(
            params.shift,
            params.root,
            out_dir,
            parts=parts,
            seed=data["split_seed"],
            k_adapt_per_class=data["k_adapt_per_class"],
            cache_max_images=data["cache_max_images"],
        )
