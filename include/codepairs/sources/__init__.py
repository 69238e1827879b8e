"""Where the data comes from: repository identity, the git crawl, the GitHub crawl, repository selection."""
