"""Rule evaluate_distilled: clean and corrupted accuracy of one distillation model (every head rule)."""

from robustsoup.distill_stages import evaluate_distilled_stage
from robustsoup.job import snakemake_job

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:  # noqa: F821
        inputs, params, output = snakemake.input, snakemake.params, snakemake.output  # noqa: F821
        multihead = "adapt" in inputs.keys()
        evaluate_distilled_stage(
            job.config, inputs.weights, inputs.test, params.corrupted_test, output.rows, output.summary,
            job.device, adapt_path=inputs.adapt if multihead else None,
            corrupted_adapt_dir=params.corrupted_adapt if multihead else None,
        )
