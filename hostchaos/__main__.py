from hostchaos.cli import main

main()
