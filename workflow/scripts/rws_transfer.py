"""Rule rws_transfer: signatures extracted against `standard` patched onto other standard models."""

from pathlib import Path

from robustsoup.rws.stages import rws_transfer
from robustsoup.snakemake_job import snakemake_job

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:
        inp = snakemake.input
        signatures = dict(zip(job.config["rws"]["corruptions"], inp.signatures))
        rws_transfer(
            job.config,
            list(inp.targets),
            signatures,
            inp.test,
            Path(inp.corrupted[-1]).parent,
            snakemake.output.rows,
            job.device,
        )
