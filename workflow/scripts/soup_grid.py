"""Rule soup_grid: write soups/grid.tsv, one row per soup."""

from robustsoup.job import snakemake_job
from robustsoup.config import base_model_names
from robustsoup.soups import grid_from_config, write_grid

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:  # noqa: F821
        write_grid(grid_from_config(job.config), base_model_names(job.config), snakemake.output.grid)  # noqa: F821
