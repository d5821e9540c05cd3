"""The online methods as the tests configure them (tiny model, short sequences): one place,
shared by the CPU integration tests and the GPU tests."""

from raylign.algorithms.grpo import GRPOConfig
from raylign.algorithms.grpo_job import GRPOAlgorithm
from raylign.algorithms.online_dpo import OnlineDPOConfig
from raylign.algorithms.online_dpo_job import OnlineDPOAlgorithm
from raylign.algorithms.ppo import PPOConfig
from raylign.algorithms.ppo_job import PPOAlgorithm
from raylign.algorithms.quark import QuarkConfig
from raylign.algorithms.quark_job import QuarkAlgorithm
from raylign.algorithms.raft import RAFTConfig
from raylign.algorithms.raft_job import RAFTAlgorithm

MAX_LENGTH = 64

METHODS = {
    "ppo": lambda: PPOAlgorithm(PPOConfig(ppo_epochs=2, kl_coef=0.05), MAX_LENGTH),
    "ppo_separate_critic": lambda: PPOAlgorithm(PPOConfig(ppo_epochs=1, value_model="separate", adaptive_kl=True,
                                                          kl_horizon=100), MAX_LENGTH),
    "grpo": lambda: GRPOAlgorithm(GRPOConfig(kl_coef=0.05, epochs=2), MAX_LENGTH),
    "rloo": lambda: GRPOAlgorithm(GRPOConfig(estimator="rloo"), MAX_LENGTH),
    "raft": lambda: RAFTAlgorithm(RAFTConfig(mode="top", top_fraction=0.5, min_response_tokens=1,
                                             reject_markers=[]), MAX_LENGTH),
    "online_dpo": lambda: OnlineDPOAlgorithm(OnlineDPOConfig(beta=0.5)),
    "quark": lambda: QuarkAlgorithm(QuarkConfig(num_quantiles=2, pool_size=16), MAX_LENGTH),
}
