"""Offline RL inside the frozen world model (Dreamer 4's recipe): agent heads, return math, PMPO, training loops."""
