# The Astro project's image (`astro dev start`, `astro deploy`): Astro Runtime for Airflow 3.3.
# The Runtime image's build steps install packages.txt (apt) and requirements.txt (pip) from this folder
# and copy dags/, include/ and plugins/ to /usr/local/airflow. Not built here (no Docker on the machine
# the project is developed on), and the tag is not checked against Astronomer's registry: pick the
# Runtime 3.3 release that ships Airflow 3.3.2 (Astronomer's release notes list them).
FROM astrocrpublic.azurecr.io/runtime:3.3-1

# The pipeline package is imported as `codepairs` (include/ on the path, as in tests and docker-compose);
# GX sends no usage analytics; the tasks run crawls and gates, so keep the workers' parallelism modest.
ENV PYTHONPATH=/usr/local/airflow/include \
    GX_ANALYTICS_ENABLED=false \
    CODEPAIRS_DATA_DIR=/usr/local/airflow/codepairs-data
