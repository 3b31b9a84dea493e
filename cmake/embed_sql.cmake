# Writes OUT: a C++ initializer list of {file name, file text} for SQL_DIR/*.sql,
# in name order.
file(GLOB files ${SQL_DIR}/*.sql)
list(SORT files)
set(text "// Generated from sql/ by cmake/embed_sql.cmake. Do not edit.\n")
foreach(f ${files})
  get_filename_component(name ${f} NAME)
  file(READ ${f} body)
  string(APPEND text "{\"${name}\", R\"lease_agent_sql(${body})lease_agent_sql\"},\n")
endforeach()
file(WRITE ${OUT} "${text}")
