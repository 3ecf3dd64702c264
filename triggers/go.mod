module github.com/evalflow/evalflow/triggers

go 1.26.0
