from hostchaos.fastpath import main

main()
