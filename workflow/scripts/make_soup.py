"""Rule make_soup: mix the base models into one soup checkpoint."""

import json
from pathlib import Path

from robustsoup.job import snakemake_job
from robustsoup.stages import make_soup

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:  # noqa: F821
        weights = json.loads(snakemake.params.weights)  # noqa: F821
        paths = {Path(path).stem: path for path in snakemake.input.ingredients}  # noqa: F821
        make_soup(
            job.config, snakemake.wildcards.soup, weights, paths,  # noqa: F821
            snakemake.input.train, snakemake.output.weights, job.device,  # noqa: F821
        )
