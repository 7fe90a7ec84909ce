"""`benchlab local`: the lab's main job on this machine, simulated (Dynamo mocker, real AIPerf)."""
