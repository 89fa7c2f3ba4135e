# The embedded demo: synthetic subjects with planted truth, written as BIDS.
if STUDY.simulated:

    rule simulate:
        output:
            stimuli=f"{RESULTS}/stimuli.tsv",
            truth=f"{RESULTS}/truth.json",
            bids=directory(f"{RESULTS}/bids"),
        log:
            f"{LOGS}/simulate.log",
        resources:
            mem_mb=2000,
            runtime=15,
        run:
            step(log, simulate_study, STUDY, RESULTS)
