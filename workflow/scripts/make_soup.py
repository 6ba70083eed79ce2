"""Rule make_soup: mix the base models into one soup checkpoint."""

import json
from pathlib import Path

from robustsoup.lp.stages import make_soup
from robustsoup.snakemake_job import snakemake_job

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:
        weights = json.loads(snakemake.params.weights)
        paths = {Path(path).stem: path for path in snakemake.input.ingredients}
        make_soup(
            job.config,
            snakemake.wildcards.soup,
            weights,
            paths,
            snakemake.input.train,
            snakemake.output.weights,
            job.device,
        )
