"""Rule train_rws_init: the shared initialization of the RWS models (or a transfer target's own)."""

from robustsoup.job import snakemake_job
from robustsoup.rws_stages import train_init

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:  # noqa: F821
        train_init(job.config, snakemake.wildcards.rws_init, snakemake.input.train,  # noqa: F821
                   snakemake.output.weights, job.device)  # noqa: F821
