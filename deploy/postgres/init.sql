-- databases next to the application's own (POSTGRES_DB=prodclass): MLflow's and Dagster's
CREATE DATABASE mlflow OWNER prodclass;
CREATE DATABASE dagster OWNER prodclass;
