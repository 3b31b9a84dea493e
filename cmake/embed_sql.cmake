# Writes OUT: a C++ initializer list of {file name, file text} for FILES.
set(text "// Generated from sql/ by cmake/embed_sql.cmake. Do not edit.\n")
foreach(f ${FILES})
  get_filename_component(name ${f} NAME)
  file(READ ${f} body)
  string(APPEND text "{\"${name}\", R\"lease_agent_sql(${body})lease_agent_sql\"},\n")
endforeach()
file(WRITE ${OUT} "${text}")
