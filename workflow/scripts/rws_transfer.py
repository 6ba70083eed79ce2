"""Rule rws_transfer: signatures extracted against `standard` patched onto other standard models."""

from pathlib import Path

from robustsoup.job import snakemake_job
from robustsoup.rws_stages import transfer_stage

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:  # noqa: F821
        inp = snakemake.input  # noqa: F821
        signatures = dict(zip(job.config["rws"]["corruptions"], inp.signatures))
        transfer_stage(job.config, list(inp.targets), signatures, inp.test, Path(inp.corrupted[-1]).parent,
                       snakemake.output.rows, job.device)  # noqa: F821
