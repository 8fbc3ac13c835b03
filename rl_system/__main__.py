from rl_system.cli import main

main()
