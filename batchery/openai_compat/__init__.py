"""OpenAI's shapes over batchery's jobs: ``/v1/embeddings`` requests and answers, and the Batch API's input
file, output lines and statuses.

What here does not depend on HTTP lives here, below the API (``batchery/app/openai`` holds the routes): reading an
embeddings request (:mod:`.embeddings`), the JSON shapes OpenAI's clients read (:mod:`.shapes`), turning a batch's
input file into a job and a plan of its lines (:mod:`.plan`), and a finished job into its output and error files
(:mod:`.finalize`).
"""
