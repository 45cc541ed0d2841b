"""Training pieces shared by both stages: LightningModules, learning-rate schedules, optimiser builders."""
