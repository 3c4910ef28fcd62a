"""Preemption: SIGTERM / SIGUSR1 in the middle of a phase -> checkpoint, stop; resume=true ends identically."""
import signal

from conftest import QUICK, results, run_cli, signal_mid_phase

# SI + replay + facilitation + probe: learner, optimizer, plugin and RNG state must all survive a mid-phase stop
# (the probe of the interrupted phase ran before the stop and must neither run again nor be lost).
JOB = ("fit", "powerlaw/pmnist", *QUICK, "stream.n_tasks=3", "learner.name=si", "plugins.replay.capacity=200",
       "model.hidden=[100,100]", "trainer.steps_per_task=300", "plugins.probe.steps=10")
_metrics = results


def test_sigterm_mid_phase_checkpoints_and_resume_matches(tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert run_cli(*JOB, f"run_dir={full}").returncode == 0
    code, out = signal_mid_phase([*JOB, f"run_dir={cut}"], signal.SIGTERM)
    assert code == 1, out
    assert "checkpointing at phase 2, batch" in out and "resume=true" in out
    assert not (cut / "metrics.json").exists()
    import torch
    state = torch.load(cut / "checkpoints" / "last.pt", weights_only=False)
    assert state["progress"]["next_phase"] == 1 and state["progress"]["batches_into_phase"] > 0
    resumed = run_cli(*JOB, f"run_dir={cut}", "resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _metrics(cut) == _metrics(full)


def test_reset_per_task_adam_resumes_exactly_mid_phase(tmp_path):
    """optim.reset_per_task: each phase starts Adam from zero, yet a phase stopped mid-way must resume with the
    moments it had built up (the optimizer Lightning trains with is the one the checkpoint saves)."""
    job = (*JOB, "learner.name=finetune", "optim.name=adam", "optim.reset_per_task=true")
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert run_cli(*job, f"run_dir={full}").returncode == 0
    code, out = signal_mid_phase([*job, f"run_dir={cut}"], signal.SIGTERM)
    assert code == 1 and "checkpointing at phase 2, batch" in out, out[-3000:]
    import torch
    state = torch.load(cut / "checkpoints" / "last.pt", weights_only=False)
    assert state["optimizer"]["state"], "a mid-phase checkpoint must carry the phase's Adam moments"
    resumed = run_cli(*job, f"run_dir={cut}", "resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _metrics(cut) == _metrics(full)
